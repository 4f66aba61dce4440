"""A real batch of inputs: a T x d array checked once, read from a ``.npy`` file, or T handwritten digits.

Every prediction of the theory assumes isotropic inputs unless it is given a batch; the sampler draws
Gaussian inputs unless it is given one. Both take the same array ``X`` of shape (T, d): T samples (the
batch) of d input dimensions. With a batch, the first layer's fan-in is d, not the network's input
width alpha_0 M: W^1 ~ N(0, sigma_w^2 / d), the input order parameter is qhat^0 = X X^T / d, and the
parameter count uses d for layer 1 (:func:`batch_widths`). The network's ``input_q1`` and ``input_q2``
are then not used.

The digits are scikit-learn's bundled copy of the UCI handwritten digits
(``sklearn.datasets.load_digits``: 1797 images of 8 x 8 pixels, integer grey levels 0..16, shipped inside
scikit-learn, no download). scikit-learn is an optional extra: ``pip install 'meanfield-fisher[data]'``;
everything else works without it, and :func:`digits` says what to install when it is missing.

The recipe of :func:`digits` (``standardised pixels, seeded choice``):

1. all 1797 images as rows of a 1797 x 64 float64 array x;
2. every pixel (column) standardised over the 1797 images: (x - mean) / std with the population std
   (ddof = 0); the 3 pixels that are 0 in every image (std 0) are set to 0 instead of 0/0, so each
   image has mean square 61/64 on average over the whole set and no entry is NaN;
3. T of the 1797 rows chosen by ``numpy.random.default_rng(seed).choice(1797, T, replace=False)``, in
   the order drawn.

Example:
    >>> X = check_inputs([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> X.shape, X.flags.writeable
    ((3, 2), False)
    >>> [round(v, 6) for v in input_statistics(X)]   # mean of diag and off-diagonal of X X^T / d
    [1.166667, 0.5]
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import re
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int

__all__ = ["check_inputs", "load_inputs", "digits", "parse_inputs", "input_statistics", "batch_widths",
           "has_scikit_learn", "MissingExtra", "BatchKey", "DATA_EXTRA", "DIGITS_COUNT", "DIGITS_PIXELS"]

#: What to install for the bundled digits.
DATA_EXTRA = "pip install 'meanfield-fisher[data]'"
#: Images in scikit-learn's bundled digits, and pixels per image (8 x 8).
DIGITS_COUNT = 1797
DIGITS_PIXELS = 64


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says what to install.

    Example:
        >>> print(MissingExtra("the handwritten digits", "scikit-learn", DATA_EXTRA))
        the handwritten digits need scikit-learn, which is not installed: pip install 'meanfield-fisher[data]'
    """

    def __init__(self, what: str, package: str, command: str):
        self.what, self.package, self.command = what, package, command
        super().__init__(f"{what} need {package}, which is not installed: {command}")

    def __reduce__(self):
        return (type(self), (self.what, self.package, self.command))


class BatchKey:
    """A numeric array (a batch X, or its Gram) as a cache key: equal when the float64 shape and bytes are
    (a SHA-1 digest of them); ``array`` holds a copy of the array.

    Example:
        >>> BatchKey(np.eye(3)) == BatchKey(np.eye(3).copy()), BatchKey(np.eye(3)) == BatchKey(2 * np.eye(3))
        (True, False)
    """

    __slots__ = ("array", "digest")

    def __init__(self, array: Any):
        self.array = np.array(array, dtype=np.float64, order="C", copy=True)  # a copy: the caller's may change
        self.digest = hashlib.sha1(repr(self.array.shape).encode() + self.array.tobytes()).hexdigest()

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BatchKey) and other.digest == self.digest



def check_inputs(inputs: Any, argument: str = "inputs", *, samples: Any = None) -> np.ndarray:
    """X as a read-only float64 array of shape (T, d), T >= 1, d >= 1, every entry finite.

    An array that already is read-only float64 and C-contiguous is returned as it is; anything else is
    copied (never frozen in the caller's hands).

    Args:
        inputs: a T x d array (or nested lists).
        argument: the name an error gives the array.
        samples: if not None, the T the caller also asked for: it must equal X.shape[0].

    Raises:
        InvalidArgument: not numeric, not two-dimensional, empty, NaN or infinite entries, or a T that
            differs from ``samples``.

    Example:
        >>> check_inputs(np.zeros((4, 3))).shape
        (4, 3)
        >>> check_inputs(np.zeros(3))
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: inputs='array of shape (3,)' is not allowed: expected a two-dimensional array of shape (T, d): T samples of d input dimensions
    """
    if isinstance(inputs, np.ndarray) and inputs.dtype == np.float64 and inputs.flags.c_contiguous \
            and not inputs.flags.writeable:
        X = inputs
    else:
        if isinstance(inputs, (str, bytes)) or inputs is None:
            raise InvalidArgument(argument, inputs, "an array of shape (T, d) (read a file with load_inputs)")
        try:
            X = np.array(inputs, dtype=np.float64, order="C", copy=True)
        except (TypeError, ValueError) as err:
            raise InvalidArgument(argument, type(inputs).__name__, "a numeric array of shape (T, d)",
                                  f"{type(err).__name__}: {err}") from None
    if X.ndim != 2:
        raise InvalidArgument(argument, f"array of shape {X.shape}",
                              "a two-dimensional array of shape (T, d): T samples of d input dimensions")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise InvalidArgument(argument, f"array of shape {X.shape}", "at least one sample and one input dimension")
    if not np.all(np.isfinite(X)):
        bad = np.argwhere(~np.isfinite(X))[0]
        raise InvalidArgument(argument, f"array of shape {X.shape}", "finite entries",
                              f"entry ({int(bad[0])}, {int(bad[1])}) is {X[tuple(bad)]}")
    if samples is not None:
        T = check_int("samples", samples, minimum=1)
        if T != X.shape[0]:
            raise InvalidArgument("samples", T, f"{X.shape[0]}, the number of rows of {argument} (or leave it out)")
    if X.flags.writeable:
        X.setflags(write=False)
    return X


def load_inputs(path: str | os.PathLike) -> np.ndarray:
    """X from a ``.npy`` file holding one T x d numeric array (no pickled objects).

    Raises:
        InvalidArgument: a missing or unreadable file, not a ``.npy`` array, or an array that is not T x d
            and finite.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "x.npy"
        ...     np.save(path, np.ones((5, 3)))
        ...     load_inputs(path).shape
        (5, 3)
    """
    name = os.fspath(path)
    try:
        data = np.load(name, allow_pickle=False)
    except FileNotFoundError:
        raise InvalidArgument("inputs", name, "an existing .npy file (or digits:T)") from None
    except IsADirectoryError:
        raise InvalidArgument("inputs", name, "a .npy file, not a directory") from None
    except (ValueError, OSError, EOFError) as err:
        raise InvalidArgument("inputs", name, "a .npy file holding one numeric T x d array",
                              f"{type(err).__name__}: {err}") from None
    if isinstance(data, np.lib.npyio.NpzFile):  # pragma: no cover - np.load of an .npz
        data.close()
        raise InvalidArgument("inputs", name, "a .npy file holding one array, not an .npz archive")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise InvalidArgument("inputs", name, "a real numeric T x d array", f"its dtype is {data.dtype}")
    return check_inputs(data, "inputs")


def has_scikit_learn() -> bool:
    """True when scikit-learn (the ``data`` extra, for :func:`digits`) can be imported.

    Example:
        >>> has_scikit_learn() in (True, False)
        True
    """
    try:
        importlib.import_module("sklearn.datasets")
    except ImportError:
        return False
    return True


def _datasets() -> Any:
    """scikit-learn's datasets module, or MissingExtra naming the extra to install (looked up on every call,
    which after the first import is a dictionary lookup, so that a removed install is reported too)."""
    try:
        return importlib.import_module("sklearn.datasets")
    except ImportError:
        raise MissingExtra("the handwritten digits", "scikit-learn", DATA_EXTRA) from None


@functools.lru_cache(maxsize=1)
def _standardised_digits() -> np.ndarray:
    """All 1797 images, every pixel standardised over the images (constant pixels 0): read-only."""
    x = np.asarray(_datasets().load_digits(return_X_y=True)[0], dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    # a pixel that is 0 in every image has std 0: centred it is 0 everywhere, so it stays 0 (not 0/0)
    scale = np.where(std > 0, std, 1.0)
    z = np.ascontiguousarray((x - mean) / scale)
    z.setflags(write=False)
    return z


def digits(samples: int, seed: int = 0) -> np.ndarray:
    """T handwritten digits, pixels standardised over all 1797 images: a read-only T x 64 array.

    The recipe (standardisation, the seeded choice) is in the module docstring.

    Args:
        samples: T, the number of images (1 to 1797).
        seed: the seed of the choice of images (an integer >= 0).

    Raises:
        MissingExtra: scikit-learn is not installed (an ImportError naming
            ``pip install 'meanfield-fisher[data]'``).
        InvalidArgument: T or seed out of range.

    Example:
        >>> X = digits(8, seed=0)
        >>> X.shape, X.flags.writeable, bool(np.array_equal(X, digits(8, seed=0)))
        ((8, 64), False, True)
    """
    T = check_int("samples", samples, minimum=1, maximum=DIGITS_COUNT)
    seed = check_int("seed", seed, minimum=0)
    _datasets()
    pixels = _standardised_digits()
    chosen = np.random.default_rng(seed).choice(DIGITS_COUNT, size=T, replace=False)
    X = np.ascontiguousarray(pixels[chosen])
    X.setflags(write=False)
    return X


_DIGITS_SPEC = re.compile(r"digits:(\d+)(?::(\d+))?")


def parse_inputs(text: str) -> np.ndarray:
    """X from the command line's ``--inputs``: ``FILE.npy``, ``digits:T`` or ``digits:T:SEED`` (seed 0).

    Raises:
        InvalidArgument: a malformed ``digits:`` spec or an unusable file (see :func:`load_inputs`).
        MissingExtra: ``digits:`` without scikit-learn installed.

    Example:
        >>> parse_inputs("digits:x")
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: inputs='digits:x' is not allowed: expected FILE.npy, digits:T or digits:T:SEED with T from 1 to 1797 images and SEED >= 0
    """
    text = str(text).strip()
    if text.startswith("digits"):
        match = _DIGITS_SPEC.fullmatch(text)
        T = int(match.group(1)) if match else 0
        if not match or not 1 <= T <= DIGITS_COUNT:
            raise InvalidArgument("inputs", text, f"FILE.npy, digits:T or digits:T:SEED with T from 1 to "
                                  f"{DIGITS_COUNT} images and SEED >= 0")
        return digits(T, int(match.group(2) or 0))
    if not text.endswith(".npy"):
        raise InvalidArgument("inputs", text, "FILE.npy (one T x d array saved by numpy.save), digits:T or "
                              "digits:T:SEED")
    return load_inputs(text)


def input_statistics(inputs: Any) -> tuple[float, float]:
    """(q1, q2): the means of the diagonal and of the off-diagonal entries of qhat^0 = X X^T / d.

    These are the isotropic input statistics (``input_q1``, ``input_q2``) that match the batch on
    average: the theory without the batch, beside the theory on it. With T = 1, q2 is 0.

    Example:
        >>> [round(v, 6) for v in input_statistics(np.eye(3))]
        [0.333333, 0.0]
    """
    X = check_inputs(inputs)
    T, d = X.shape
    gram = X @ X.T / d
    q1 = float(np.trace(gram) / T)
    q2 = float((gram.sum() - np.trace(gram)) / (T * (T - 1))) if T > 1 else 0.0
    return q1, q2


def batch_widths(net: Any, width: Any, inputs: Any) -> tuple[int, ...]:
    """(d, M_1, ..., M_{L-1}, C): the layer widths of ``net`` at base width M on a batch of d inputs.

    The input layer's width is the batch's d instead of alpha_0 M; the hidden widths and the outputs are
    the network's. The parameter count on the batch is sum_l M_l (M_{l-1} + 1) over these sizes.

    Example:
        >>> from meanfield.spec.network import Network
        >>> batch_widths(Network(3, "relu", 2, 0, outputs=4), 16, np.zeros((5, 64)))
        (64, 16, 16, 4)
    """
    X = check_inputs(inputs)
    sizes = net.widths(check_int("width", width, minimum=1))
    return (X.shape[1], *sizes[1:])
