"""In-memory arrays and `.npz` files as datasets, checked as carefully as the IDX files."""

import os
import zipfile
from pathlib import Path

import numpy as np


class InvalidDatasetError(ValueError):
    """Arrays (or a `.npz` file) that cannot serve as a classification dataset."""


# The keys of a `.npz` dataset, per split (the layout of keras' `mnist.npz`).
NPZ_KEYS = {"train": ("x", "y"), "test": ("x_test", "y_test")}


def check_arrays(
    inputs: np.ndarray, labels: np.ndarray, *, source: str = "arrays"
) -> tuple[np.ndarray, np.ndarray]:
    """Check that `(inputs, labels)` form a classification dataset.

    **Arguments:**

    - `inputs`: the examples, shape `(n, ...)`, a real (integer or floating) dtype; float
      inputs must be finite.
    - `labels`: class indices, shape `(n,)`, an integer dtype, non-negative.
    - `source`: how errors name the data (a file name, say).

    **Returns:** `(inputs, labels)` as NumPy arrays, unchanged.

    **Raises:** `InvalidDatasetError` naming `source`, the array and the problem (dtype,
    shape, lengths, the first non-finite value or negative label).
    """
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    real = (np.integer, np.floating)
    if not any(np.issubdtype(inputs.dtype, k) for k in real) or inputs.dtype == np.bool_:
        raise InvalidDatasetError(
            f"{source}: inputs must be integers or floats, got dtype {inputs.dtype}"
        )
    if inputs.ndim < 1 or len(inputs) == 0:
        raise InvalidDatasetError(
            f"{source}: inputs must have shape (examples, ...) with at least one example, got "
            f"shape {inputs.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        hint = " (labels.astype(np.int32) if they are whole numbers)"
        raise InvalidDatasetError(
            f"{source}: labels must be integer class indices, got dtype {labels.dtype}"
            + (hint if np.issubdtype(labels.dtype, np.floating) else "")
        )
    if labels.ndim != 1:
        raise InvalidDatasetError(
            f"{source}: labels must have shape (examples,), got shape {labels.shape}"
        )
    if len(inputs) != len(labels):
        raise InvalidDatasetError(
            f"{source}: {len(inputs)} inputs but {len(labels)} labels; they must match"
        )
    if np.issubdtype(inputs.dtype, np.floating):
        bad = ~np.isfinite(inputs)
        if bad.any():
            first = np.unravel_index(int(np.argmax(bad)), inputs.shape)
            raise InvalidDatasetError(
                f"{source}: inputs hold {int(bad.sum())} non-finite values (NaN or inf), the "
                f"first at index {tuple(int(i) for i in first)}"
            )
    if len(labels) and (low := int(labels.min())) < 0:
        raise InvalidDatasetError(f"{source}: label {low} is negative; classes count from 0")
    return inputs, labels


def load_npz(path: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load a classification dataset split from a `.npz` file.

    The file holds `x` and `y` (the training split) and optionally `x_test` and `y_test` (the
    test split), as `np.savez(path, x=..., y=..., x_test=..., y_test=...)` writes them:
    inputs of any shape with the examples first (`(n, 40)` signals, `(n, 28, 28)` images,
    `(n, h, w, c)` colour images), and integer labels of shape `(n,)`. Nothing is unpickled:
    object arrays are refused.

    ```python
    import numpy as np, zoo

    np.savez("signals.npz", x=x_train, y=y_train, x_test=x_test, y_test=y_test)
    x, y = zoo.data.load_npz("signals.npz", "train")
    batches = zoo.data.batches({"image": x, "label": y}, 100, seed=0)  # floats unchanged
    ```

    **Arguments:**

    - `path`: the `.npz` file.
    - `split`: `"train"` (keys `x`, `y`) or `"test"` (keys `x_test`, `y_test`).

    **Returns:** `(inputs, labels)`, checked as [`zoo.data.check_arrays`][] checks them.

    **Raises:**

    - `ValueError`: for an unknown `split`.
    - `FileNotFoundError`: when `path` does not exist.
    - `InvalidDatasetError`: naming the file and key, for a file that is not a `.npz`
      archive, a missing key (listing those present), pickled (object) arrays, or arrays
      that fail the checks of `check_arrays`.
    """
    if split not in NPZ_KEYS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(NPZ_KEYS)}")
    path = Path(path)
    x_key, y_key = NPZ_KEYS[split]
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise InvalidDatasetError(f"{path}: not a readable .npz archive ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InvalidDatasetError(
            f"{path}: a single .npy array, not a .npz archive of {x_key!r} and {y_key!r} "
            f"(write one with np.savez(path, x=..., y=..., x_test=..., y_test=...))"
        )
    with archive:
        present = sorted(archive.files)
        arrays = {}
        for key in (x_key, y_key):
            if key not in present:
                raise InvalidDatasetError(
                    f"{path}: no array {key!r} for the {split} split (the file holds "
                    f"{', '.join(present) or 'nothing'}; a .npz dataset holds x, y for "
                    f"'train' and x_test, y_test for 'test')"
                )
            try:
                arrays[key] = archive[key]
            except ValueError as e:  # object arrays, with allow_pickle=False
                raise InvalidDatasetError(f"{path}: array {key!r} cannot be read ({e})") from None
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise InvalidDatasetError(f"{path}: array {key!r} is corrupt ({e})") from None
    return check_arrays(arrays[x_key], arrays[y_key], source=f"{path} ({x_key}, {y_key})")
