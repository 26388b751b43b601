"""What a dataset says of its people: ml-100k's ``u.user`` and ml-1m's ``users.dat`` give each
person's age, gender and occupation (and a zip code, which rec does not read: thousands of
values, most held by one person).

Each attribute value is one feature, named ``attribute:value`` (``gender:F``,
``age:25-34``, ``occupation:writer``).  Ages fall in ml-1m's seven groups, so that the two
datasets' features read alike; ml-100k's exact ages are put in the same groups.  A person's
row of the feature matrix D is the mean of their values' one-hot rows (``1/3`` each), as a
movie's row of A is the mean of its genres': the prior mean ``D Z`` of their factors is the
mean of their attributes' embeddings (:mod:`rec.als.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from rec.data.catalog import lists_to_csr, mean_block
from rec.errors import ConfigError, DataError, RecError

AGE_GROUPS = ((1, "under 18"), (18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-49"),
              (50, "50-55"), (56, "56+"))
"""ml-1m's age groups: (first age, name); ml-1m codes each person by the first age."""
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
"""ml-1m's occupation codes 0-20 (its README)."""
ATTRIBUTES = ("gender", "age", "occupation")


def age_group(age: int) -> str:
    """The name of the ml-1m age group that ``age`` (years, or ml-1m's code) falls in."""
    name = AGE_GROUPS[0][1]
    for first, group in AGE_GROUPS:
        if age >= first:
            name = group
    return name


def feature_name(attribute: str, value) -> str:
    """The feature a person's ``attribute`` (gender, age or occupation) of ``value`` is:
    ``gender:F``, ``age:25-34`` (ages fall in :data:`AGE_GROUPS`), ``occupation:writer``."""
    if attribute == "age":
        return f"age:{age_group(int(value))}"
    text = str(value).strip()
    return f"{attribute}:{text.upper() if attribute == 'gender' else text}"


def attribute_list(gender: str, age: int, occupation: str) -> list[str]:
    """One person's feature names."""
    return [feature_name(a, v) for a, v in zip(ATTRIBUTES, (gender, age, occupation))]


@dataclass(frozen=True)
class People:
    """Each person index's features: ``names`` and a CSR of feature indices per person."""

    names: list[str]
    """Name of each feature (``attribute:value``), sorted."""
    offsets: torch.Tensor
    """int64 (people + 1,) CSR offsets into ``index``."""
    index: torch.Tensor
    """int32 feature indices; a person the file does not describe has none."""

    @classmethod
    def from_lists(cls, lists: list[list[str]]) -> "People":
        """From one list of feature names per person index."""
        names, offsets, index = lists_to_csr(lists, sorted({f for fs in lists for f in fs}))
        return cls(names, offsets, index)

    @classmethod
    def aligned(cls, user_ids: np.ndarray, ids: np.ndarray, lists: list[list[str]],
                path) -> "People":
        """The people of a file (``ids``, one list each) in the order of the rating file's
        ``user_ids``; a rating person the file leaves out gets no features."""
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise DataError(f"{path}: user id {unique[counts > 1][0]} appears more than once; "
                           "each person must be listed once.")
        where = {int(i): k for k, i in enumerate(ids.tolist())}
        return cls.from_lists([lists[where[u]] if u in where else []
                               for u in user_ids.tolist()])

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def feature_matrix(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """D (people x features): row m the mean of person m's features' one-hot rows."""
        return mean_block(self.offsets, self.index.long(), len(self.names), dtype)

    def row(self, attributes: dict, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """D's row of a person not in the data, from ``{"gender": "F", "age": 31,
        "occupation": "writer"}`` (any of the three; an unknown value is an error)."""
        unknown = sorted(set(attributes) - set(ATTRIBUTES))
        if unknown:
            raise RecError(f"attributes: {unknown[0]!r} is not one of {', '.join(ATTRIBUTES)}.")
        wanted = []
        for key, value in attributes.items():
            name = feature_name(key, value)
            if name not in self.names:
                known = [n.split(":", 1)[1] for n in self.names if n.startswith(key + ":")]
                raise RecError(f"attributes: {key}={value!r} is not among this dataset's "
                               f"values: {', '.join(known)}.")
            wanted.append(self.names.index(name))
        out = torch.zeros(len(self.names), dtype=dtype)
        if wanted:
            out[wanted] = 1.0 / len(wanted)
        return out

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def require_people(people: People | None, dataset: str) -> People:
    """``people``, or the error that says the dataset describes none."""
    if people is None or not people.names:
        raise ConfigError(f"model.person_features: {dataset} does not describe its people (only "
                          "ml-100k's u.user and ml-1m's users.dat do); set "
                          "model.person_features=false.")
    return people
