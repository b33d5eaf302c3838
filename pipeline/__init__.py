"""Record schemas, sampling engines, model references, pairs, curriculum and the dataset store.

``DATA_DIR`` is the shipped data folder: the repository's ``data/`` in a clone, ``prefwork/data``
in an installed wheel (both are the sibling of this package's folder).
"""
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
