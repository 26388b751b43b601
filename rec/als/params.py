"""The parameters of J and predictions from them (SPEC §2.1)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

TENSORS = ("user_factors", "user_bias", "item_factors", "item_bias", "genre_factors", "genre_bias",
           "rated_factors", "rater_factors")


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

    def __post_init__(self) -> None:
        for name in ("rated_factors", "rater_factors"):
            if getattr(self, name) is None:
                setattr(self, name, self.user_factors.new_zeros(0, self.user_factors.shape[1]))

    @classmethod
    def initial(cls, n_users: int, n_items: int, n_genres: int, dim: int, mu: float,
                init_std: float, seed: int, dtype=torch.float32, device="cpu",
                rated: tuple[int, int] = (0, 0)) -> "Params":
        """U, V ~ N(0, init_std^2); biases 0; W at its prior mean 0 (so the first movie step
        sees p_n = 0, as the embeddings rung does); ``rated`` rows of Y and X, at 0."""
        g = torch.Generator().manual_seed(seed)
        draw = lambda *shape: (torch.randn(*shape, generator=g, dtype=torch.float64) * init_std
                               ).to(dtype=dtype, device=device)
        zeros = lambda n: torch.zeros(n, dtype=dtype, device=device)
        return cls(mu, draw(n_users, dim), zeros(n_users), draw(n_items, dim), zeros(n_items),
                   torch.zeros(n_genres, dim, dtype=dtype, device=device), zeros(n_genres),
                   *(torch.zeros(n, dim, dtype=dtype, device=device) for n in rated))

    @property
    def dim(self) -> int:
        return self.user_factors.shape[1]

    def predict(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """r-hat = mu + b_m + c_n + u_m . v_n for aligned 1-D index tensors."""
        if self.dim:  # index_select and a batched (1 x K)(K x 1) product: ~3x faster than [] and *
            u, v = self.user_factors.index_select(0, user), self.item_factors.index_select(0, item)
            out = torch.bmm(u.unsqueeze(1), v.unsqueeze(2)).view(-1)
        else:
            out = torch.zeros(user.numel(), dtype=self.user_bias.dtype, device=user.device)
        out += self.user_bias.index_select(0, user)
        out += self.item_bias.index_select(0, item)
        return out.add_(self.mu)

    def clone(self) -> "Params":
        return Params(self.mu, *(getattr(self, k).clone() for k in TENSORS))

    def to(self, device=None, dtype=None) -> "Params":
        return Params(self.mu, *(getattr(self, k).to(device=device, dtype=dtype) for k in TENSORS))

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
