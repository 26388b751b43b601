"""The parameters of J and predictions from them (SPEC §2.1)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

TENSORS = ("user_factors", "user_bias", "item_factors", "item_bias", "genre_factors", "genre_bias",
           "rated_factors", "rater_factors", "bin_bias", "drift", "bin_edges", "user_day",
           "person_factors", "person_bias")
DRIFT_POWER = 0.4
"""beta of ``dev_m(t) = sign(t - t_m) |t - t_m|^beta`` (days), Koren's (2009) choice."""
SECONDS_PER_DAY = 86400.0


def days(timestamp: torch.Tensor) -> torch.Tensor:
    """Unix timestamps (seconds) as float64 days: the time terms' unit."""
    return timestamp.double() / SECONDS_PER_DAY


def deviation(day: torch.Tensor, mean_day: torch.Tensor) -> torch.Tensor:
    """``dev(t) = sign(t - t_m) |t - t_m|^beta`` of days ``day`` from ``mean_day``."""
    d = day - mean_day
    return d.sign() * d.abs().pow(DRIFT_POWER)


DRAW_ROWS = 1 << 14
"""Rows drawn at a time by :func:`normal_rows`: a multiple of 16, the block in which torch's
CPU generator draws normals, so the draws equal one call's."""


def normal_rows(n: int, dim: int, std: float, generator: torch.Generator,
                dtype: torch.dtype, device) -> torch.Tensor:
    """``(n, dim)`` draws of N(0, std^2) from ``generator``, in float64 then cast (the same
    values on every device and precision), :data:`DRAW_ROWS` rows at a time: the same numbers
    and generator state as one ``torch.randn(n, dim)`` (every part but the last a multiple of
    16 numbers, the last at least 16 rows), without that call's float64 table, which at 2 M
    people and K = 64 was 1 GiB, and 2 with its scaled copy, above the parameters."""
    out = torch.empty(n, dim, dtype=dtype, device=device)
    start = 0
    while start < n:
        stop = n if n - start < 2 * DRAW_ROWS else start + DRAW_ROWS
        part = torch.randn(stop - start, dim, generator=generator, dtype=torch.float64)
        out[start:stop] = part.mul_(std)
        start = stop
    return out


@dataclass
class Params:
    """mu, b, c, U, V, W.  Rungs without a block keep it at zero (K = 0 for ``biases``)."""

    mu: float
    """Global mean: the mean training rating, fixed (0 for ``latent``)."""
    user_factors: torch.Tensor
    """U (users x K)."""
    user_bias: torch.Tensor
    """b (users)."""
    item_factors: torch.Tensor
    """V (movies x K)."""
    item_bias: torch.Tensor
    """c (movies)."""
    genre_factors: torch.Tensor
    """W (genres x K); the prior mean of movie n is the mean of its genres' rows."""
    genre_bias: torch.Tensor
    """beta (genres): the prior mean of movie n's bias is the mean of its genres' entries
    (``model.genre_bias``; zeros otherwise)."""
    rated_factors: torch.Tensor | None = None
    """Y (movies x K, ``model.svdpp``; 0 rows otherwise): SVD++'s implicit factors.  A
    person's factor ``user_factors[m]`` is ``u_m + |N(m)|^(-1/2) sum_{n in N(m)} y_n`` (its
    prior mean, :mod:`rec.als.rated`)."""
    rater_factors: torch.Tensor | None = None
    """X (users x K, ``model.svdpp_flipped``; 0 rows otherwise): the movie-side counterpart,
    part of each movie's prior mean."""
    bin_bias: torch.Tensor | None = None
    """(movies x B, ``model.time_bins``; 0 x 0 otherwise) ``c_{n,k}``: movie n's bias in time
    bin k, added to ``c_n`` for a rating made then."""
    drift: torch.Tensor | None = None
    """(users, ``model.time_drift``; empty otherwise) ``alpha_m``: a rating at day t gains
    ``alpha_m dev(t)`` from the person's mean day."""
    bin_edges: torch.Tensor | None = None
    """(B - 1,) the days that separate the time bins (fixed by the training ratings)."""
    user_day: torch.Tensor | None = None
    """(users,) each person's mean training day, ``t_m`` of the drift (fixed)."""
    person_factors: torch.Tensor | None = None
    """Z (person features x K, ``model.person_features``; 0 rows otherwise): the prior mean of
    person m's factors is ``d_m^T Z``, the mean of their attributes' embeddings."""
    person_bias: torch.Tensor | None = None
    """zeta (person features): the prior mean of person m's bias is ``d_m^T zeta``."""

    def __post_init__(self) -> None:
        for name in ("rated_factors", "rater_factors"):
            if getattr(self, name) is None:
                setattr(self, name, self.user_factors.new_zeros(0, self.user_factors.shape[1]))
        for name, shape in (("bin_bias", (0, 0)), ("drift", (0,)), ("bin_edges", (0,)),
                            ("user_day", (0,)), ("person_factors", (0, self.user_factors.shape[1])),
                            ("person_bias", (0,))):
            if getattr(self, name) is None:
                setattr(self, name, self.user_factors.new_zeros(shape))

    @classmethod
    def initial(cls, n_users: int, n_items: int, n_genres: int, dim: int, mu: float,
                init_std: float, seed: int, dtype=torch.float32, device="cpu",
                rated: tuple[int, int] = (0, 0), time: tuple | None = None,
                n_person_features: int = 0) -> "Params":
        """U, V ~ N(0, init_std^2); biases 0; W at its prior mean 0 (so the first movie step
        sees p_n = 0, as the embeddings rung does); ``rated`` rows of Y and X, at 0; ``time``:
        ``(bins, drift, bin_edges, user_day)`` of the time terms (their biases at 0);
        ``n_person_features`` rows of Z and entries of zeta, at 0."""
        g = torch.Generator().manual_seed(seed)
        draw = lambda n: normal_rows(n, dim, init_std, g, dtype, device)
        zeros = lambda n: torch.zeros(n, dtype=dtype, device=device)
        return cls(mu, draw(n_users), zeros(n_users), draw(n_items), zeros(n_items),
                   torch.zeros(n_genres, dim, dtype=dtype, device=device), zeros(n_genres),
                   *(torch.zeros(n, dim, dtype=dtype, device=device) for n in rated),
                   **_time_tensors(n_users, n_items, time, dtype, device),
                   person_factors=torch.zeros(n_person_features, dim, dtype=dtype, device=device),
                   person_bias=zeros(n_person_features))

    @property
    def dim(self) -> int:
        return self.user_factors.shape[1]

    @property
    def has_time(self) -> bool:
        """Whether predictions depend on when a rating is made (``model.time_bins``,
        ``model.time_drift``)."""
        return bool(self.bin_bias.numel() or self.drift.numel())

    def time_offset(self, user: torch.Tensor, item: torch.Tensor,
                    day: torch.Tensor) -> torch.Tensor:
        """``c_{n,bin(t)} + alpha_m dev_m(t)`` of ratings made on days ``day`` (a day before
        the first bin or after the last falls in that bin)."""
        out = torch.zeros(user.numel(), dtype=self.user_bias.dtype, device=user.device)
        if self.bin_bias.numel():
            k = torch.bucketize(day.to(self.bin_edges.dtype), self.bin_edges, right=True)
            out += self.bin_bias[item, k]
        if self.drift.numel():
            dev = deviation(day.to(self.user_day.dtype), self.user_day.index_select(0, user))
            out += self.drift.index_select(0, user) * dev.to(out.dtype)
        return out

    def predict(self, user: torch.Tensor, item: torch.Tensor,
                day: torch.Tensor | None = None) -> torch.Tensor:
        """r-hat = mu + b_m + c_n + u_m . v_n for aligned 1-D index tensors; with the time
        terms and the ratings' ``day`` (:func:`days`), plus :meth:`time_offset`.  Without a
        day the time terms are left out: the prediction at no particular time, the movie's
        and the person's biases averaged over it (each time term has prior mean 0)."""
        if self.dim:  # index_select and a batched (1 x K)(K x 1) product: ~3x faster than [] and *
            u, v = self.user_factors.index_select(0, user), self.item_factors.index_select(0, item)
            out = torch.bmm(u.unsqueeze(1), v.unsqueeze(2)).view(-1)
        else:
            out = torch.zeros(user.numel(), dtype=self.user_bias.dtype, device=user.device)
        out += self.user_bias.index_select(0, user)
        out += self.item_bias.index_select(0, item)
        if day is not None and self.has_time:
            out += self.time_offset(user, item, day)
        return out.add_(self.mu)

    def clone(self) -> "Params":
        return Params(self.mu, *(getattr(self, k).clone() for k in TENSORS))

    def to(self, device=None, dtype=None) -> "Params":
        return Params(self.mu, *(getattr(self, k).to(device=device, dtype=dtype) for k in TENSORS))

    def without_time(self) -> "Params":
        """The same parameters without the time terms (what rankings and analyses read)."""
        return replace(self, bin_bias=None, drift=None, bin_edges=None, user_day=None)

    def state_dict(self) -> dict:
        return {"mu": self.mu, **{k: getattr(self, k).detach().cpu() for k in TENSORS}}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Params":
        """Parameters from :meth:`state_dict`; a file from before ``genre_bias`` reads as zeros,
        one from before ``model.svdpp`` without Y and X."""
        state = {"genre_bias": torch.zeros(state["genre_factors"].shape[0],
                                           dtype=state["genre_factors"].dtype), **state}
        return cls(**{f.name: state.get(f.name) for f in fields(cls)})

    def copy_(self, other: "Params") -> None:
        """Overwrite in place (keeps buffers, e.g. the best epoch's copy)."""
        self.mu = other.mu
        for k in TENSORS:
            getattr(self, k).copy_(getattr(other, k))


def _time_tensors(n_users: int, n_items: int, time: tuple | None, dtype, device) -> dict:
    """The initial time terms: zero biases per (movie, bin), zero drifts, and the fixed axis
    (none without ``time``)."""
    if time is None:
        return {}
    bins, drift, edges, user_day = time
    zeros = lambda *shape: torch.zeros(*shape, dtype=dtype, device=device)
    return {"bin_bias": zeros(n_items if bins else 0, bins),
            "drift": zeros(n_users if drift else 0),
            "bin_edges": edges.to(dtype=dtype, device=device),
            "user_day": user_day.to(dtype=dtype, device=device) if drift else zeros(0)}
