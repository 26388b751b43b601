"""A split's rows as CSV files, for running other libraries on exactly rec's rows (SPEC §1.3).

``train.csv``, ``val.csv`` and ``test.csv`` (and for ``strong`` ``fold_in.csv``, the held-out
users' given ratings) hold ``userId,movieId,rating,timestamp`` in
the dataset's own ids, in the split's (sorted) order; ``movies.csv`` the catalog
(``movieId,title,genres``, genres ``|``-separated) for libraries that use side
information; ``split.json`` records the dataset, the split's options and the sizes,
so a comparison can say what it ran on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from rec.data.ratings import Ratings
from rec.data.splits import SplitConfig
from rec.files import atomic_write

COLUMNS = ("userId", "movieId", "rating", "timestamp")


def split_frame(ratings: Ratings, index: torch.Tensor) -> pd.DataFrame:
    """The rows ``index`` of ``ratings`` with the dataset's user and movie ids."""
    idx = index.long()
    stamps = ratings.timestamp[idx] if ratings.timestamp is not None else torch.zeros_like(idx)
    return pd.DataFrame({"userId": ratings.user_ids[ratings.user[idx].long()].numpy(),
                         "movieId": ratings.movies.ids[ratings.item[idx].long()].numpy(),
                         "rating": ratings.rating[idx].numpy(), "timestamp": stamps.numpy()})


def write_split(ratings: Ratings, split: SplitConfig, out: Path) -> dict:
    """Write the three parts of ``split`` of ``ratings`` into ``out``; return ``split.json``'s record."""
    parts = split.make(ratings)
    out = Path(out)
    given = {} if parts.fold_in is None else {"fold_in": parts.fold_in}
    for name, index in {**parts.parts(), **given}.items():
        frame = split_frame(ratings, index)
        atomic_write(out / f"{name}.csv", lambda tmp: frame.to_csv(tmp, index=False))
    movies = ratings.movies
    catalog = pd.DataFrame({"movieId": movies.ids.numpy(), "title": movies.titles,
                            "genres": ["|".join(movies.genres_of(i)) for i in range(len(movies.titles))]})
    atomic_write(out / "movies.csv", lambda tmp: catalog.to_csv(tmp, index=False))
    info = {"dataset": ratings.name, "tag": split.tag(), **split.describe(parts.sizes())}
    text = json.dumps(info, indent=2)
    atomic_write(out / "split.json", lambda tmp: Path(tmp).write_text(text))
    return info
