"""Forgiving movie title search: case, punctuation, years and "…, The" do not matter."""

from __future__ import annotations

import difflib
import re

from rec.errors import RecError

_YEAR = re.compile(r"\(\s*\d{4}(?:[-–]\d{0,4})?\s*\)")
_ARTICLE = re.compile(r"^(.*),\s*(the|a|an|les|la|le|l'|il|el|der|die|das)$", re.IGNORECASE)


def normalize(title: str) -> str:
    """Lowercase words without year, punctuation or a trailing ", The"."""
    t = _YEAR.sub(" ", title).strip()
    t = re.sub(r"\s*\([^)]*\)\s*$", "", t)  # an alternative title in parentheses
    match = _ARTICLE.match(t)
    if match:
        t = f"{match.group(2)} {match.group(1)}"
    return " ".join(re.findall(r"[0-9a-z]+", t.casefold()))


def find_title(query: str, titles: list[str], popularity=None) -> int:
    """Index of the movie ``query`` names; the most rated one when several match.

    Tries an exact match of the normalized title, then titles holding every
    word of the query; otherwise raises a :class:`RecError` listing close matches.
    """
    wanted = normalize(query)
    if not wanted:
        raise RecError(f"movie {query!r}: give a title to search for.")
    names = [normalize(t) for t in titles]
    rank = (lambda i: float(popularity[i])) if popularity is not None else (lambda i: 0.0)
    exact = [i for i, n in enumerate(names) if n == wanted]
    if exact:
        return max(exact, key=rank)
    words = set(wanted.split())
    containing = [i for i, n in enumerate(names) if words <= set(n.split())]
    if containing:
        return max(containing, key=rank)
    close = difflib.get_close_matches(wanted, names, n=5, cutoff=0.5)
    suggestions = [titles[names.index(c)] for c in close]
    hint = f" Close matches: {'; '.join(suggestions)}." if suggestions else ""
    raise RecError(f"no movie title matches {query!r}.{hint}")
