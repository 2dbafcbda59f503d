"""Type stubs of the extension module `sgraf._sgraf` (re-exported by `sgraf`)."""

import os
from collections.abc import Sequence
from typing import Any, Literal, final

import numpy as np
import numpy.typing as npt

_Path = str | os.PathLike[str]
_F32 = npt.NDArray[np.float32]

@final
class Sgraf:
    """One model, or several whose scores are averaged (an SGR and a SAF
    model together are SGRAF), ready to score."""

    @staticmethod
    def load(models: _Path | Sequence[_Path], device: str | None = "cpu") -> Sgraf:
        """Loads model folders or Hugging Face Hub ids (`owner/name[@revision]`)
        onto `device` ("cpu", "cuda:N", "wgpu" in a GPU build)."""

    @property
    def config(self) -> dict[str, Any]:
        """The models' shared configuration (`num_regions`, `img_dim`, ...)."""

    @property
    def models(self) -> list[str]:
        """The models as given to `load`."""

    def score(
        self, features: _F32 | Sequence[_F32], captions: Sequence[str]
    ) -> npt.NDArray[np.float32]:
        """Every image against every caption: float32 `[n_images, n_captions]`,
        equal to `sgraf-cli score`.

        `features` is a float32 array `[n_images, regions, img_dim]` (read
        without a copy when C-contiguous; copied in another layout; other
        dtypes are refused), or a list of `[regions, img_dim]` arrays. Do not
        modify it from another thread while `score` runs: the GIL is
        released. Ctrl-C stops the call between batches.
        """

    def rank_folder(
        self,
        folder: _Path,
        query: str,
        top: int | None = None,
        detector: _Path | None = None,
        exclude: str | Sequence[str] | None = None,
    ) -> list[Hit]:
        """Every image of `folder` (feature files; photos through the
        models' or the given detector) for `query`, best first: `rank --json`."""

    def explain(self, image_features: _F32, query: str) -> Explanation:
        """Why one image (`[regions, img_dim]` float32) matches `query`."""

@final
class Hit:
    """One ranked image."""

    file: str
    """The folder joined with the file, as `rank` prints it (the photo, for a
    photo's cached features)."""
    name: str
    """The feature file, relative to the folder."""
    score: float

    def __init__(self, file: str, score: float, name: str | None = None) -> None: ...
    def __iter__(self) -> Any:
        """`file, score = hit`"""

@final
class Explanation:
    """Why an image matches a query."""

    score: float
    """The mean of the models' scores (what `score` gives the pair)."""
    query: str
    words: list[str]
    """The query's tokens as the models read them (`<start>`, `<end>`, `<unk>`)."""
    attention: npt.NDArray[np.float32]
    """`[words, regions]`: the mean attention of the models that run in `direction`."""
    direction: Literal["words_over_regions", "regions_over_words"]
    """`"words_over_regions"` (rows of `attention` sum to 1: any SGR, SAF or RCAR t2i
    model) or `"regions_over_words"` (columns sum to 1: only RCAR i2t models)."""
    model_scores: list[tuple[str, float]]
    """`(module, score)` of each model ("SGR", "SAF", "RCAR t2i", "RCAR i2t")."""

@final
class Detector:
    """The bottom-up-attention detector: photos to region features."""

    @staticmethod
    def load(detector: _Path, device: str | None = "cpu") -> Detector:
        """A detector folder (`cargo xtask convert-weights --detector`) or Hub id."""

    def extract(
        self,
        image: _Path | npt.NDArray[np.uint8],
        boxes: int | str | None = None,
        conf: float = 0.2,
        channels: Literal["rgb", "bgr"] | None = "rgb",
    ) -> Regions:
        """Region features of a photo, equal to `sgraf-cli extract`.

        `image` is a path (JPEG, PNG, WebP, BMP, TIFF), or an `H x W x 3`
        uint8 array in **RGB** order, as PIL, imageio and matplotlib give
        it; pass `channels="bgr"` for OpenCV's order (`cv2.imread`), which
        is what the detector itself reads. `boxes`: regions per photo, N
        (exactly) or "MIN-MAX" (those of confidence >= `conf`); default the
        detector's own (36 for the k36 model).
        """

@final
class Regions:
    """What `extract` keeps of a photo (the .npy and .json of `sgraf-cli extract`)."""

    features: npt.NDArray[np.float32]
    """`[k, feature_dim]`"""
    boxes: npt.NDArray[np.float32]
    """`[k, 4]`: `x1, y1, x2, y2` in the photo's pixels."""
    classes: npt.NDArray[np.int64]
    """`[k]`: each box's object class (0-based, the line of objects_vocab.txt)."""
    scores: npt.NDArray[np.float32]
    """`[k]`: that class's probability."""
    attributes: npt.NDArray[np.int64] | None
    attribute_scores: npt.NDArray[np.float32] | None
    max_conf: npt.NDArray[np.float32]
    """`[k]`: each kept box's confidence after the class-wise NMS."""
    image_h: int
    image_w: int
    def __len__(self) -> int: ...

def evaluate(
    models: _Path | Sequence[_Path],
    data: _Path,
    split: str = "test",
    fold5: bool = False,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Recall@K and rsum of the models on a SCAN precomp folder: `eval --json`."""

def build_info() -> dict[str, str]:
    """How the extension was built: `{"profile": "debug" | "release", "version": ...}`."""
