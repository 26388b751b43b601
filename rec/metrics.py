"""Accuracy and ranking metrics (SPEC §2.5).

RMSE clips predictions to the dataset's rating range; NLL is the Gaussian
negative log-likelihood per rating at noise precision lambda; cold-start RMSE
covers the test rows whose movie has no training rating; ranking metrics
rank every movie the user did not rate in training, with held-out ratings at least
``relevance`` (4 by default) as the relevant ones: per user, precision@k (hits / k),
recall@k (hits / min(k, relevant), so a perfect list scores 1), NDCG@k, MAP@k (average
precision at the relevant ranks, over min(k, relevant)) and hit rate (any hit); over all
users, catalogue coverage (the share of movies in some list) and the mean popularity
(training count) of what is recommended.
"""

from __future__ import annotations

import math

import torch

from rec.als.params import Params

CHUNK = 1 << 18
"""Rows per pass of the pair scans, and of the error sums at K <= 10 (fewer at larger K, see
:data:`CHUNK_BYTES`)."""

CHUNK_BYTES = 20 << 20
"""Most bytes of factors the error sums gather per pass (both sides): 2^18 rows at K = 10,
32,768 at K = 64 (a pass of 2^18 rows gathered 134 MB there)."""


def squared_errors(p: Params, user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor,
                   rating_range: tuple[float, float], day: torch.Tensor | None = None) -> float:
    """Sum of squared errors of clipped predictions, in chunks (bounded memory); ``day``:
    when each rating was made, for the time terms (:meth:`Params.predict`)."""
    total = 0.0
    row_bytes = 2 * max(p.dim, 1) * p.user_factors.element_size()  # a user's and a movie's
    step = min(CHUNK, max(1024, CHUNK_BYTES // row_bytes))
    for s in range(0, rating.numel(), step):
        when = None if day is None else day[s:s + step]
        err = p.predict(user[s:s + step], item[s:s + step], when).clamp_(*rating_range)
        total += float(err.sub_(rating[s:s + step]).square_().sum(dtype=torch.float64))
    return total


def nll(sse: float, n: int, lam: float) -> float:
    """Mean of ``lam/2 (r - r_hat)^2 + 1/2 log(2 pi / lam)``."""
    return lam / 2 * sse / max(n, 1) + 0.5 * math.log(2 * math.pi / lam)


def accuracy(p: Params, user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor,
             rating_range: tuple[float, float], lam: float) -> dict[str, float]:
    """RMSE and NLL over the given ratings (NaN when there are none)."""
    n = rating.numel()
    return accuracy_of(squared_errors(p, user, item, rating, rating_range) if n else 0.0, n, lam)


def accuracy_of(sse: float, n: int, lam: float) -> dict[str, float]:
    """RMSE and NLL of ``n`` ratings with squared errors summing to ``sse`` (NaN when none)."""
    if n == 0:
        return {"rmse": float("nan"), "nll": float("nan"), "n": 0}
    return {"rmse": math.sqrt(sse / n), "nll": nll(sse, n, lam), "n": n}


def _csr(rows: torch.Tensor, cols: torch.Tensor, n_rows: int):
    order = torch.argsort(rows, stable=True)
    counts = torch.bincount(rows, minlength=n_rows)
    offsets = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    offsets[1:] = torch.cumsum(counts, 0)
    return offsets, cols[order]


def _batch_pairs(offsets: torch.Tensor, cols: torch.Tensor, users: torch.Tensor):
    """``(row, col)``: for each of ``users`` (row = its place in ``users``), the ``cols`` its
    CSR row lists."""
    lo, hi = offsets[users], offsets[users + 1]
    counts = hi - lo
    row = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
    start = torch.repeat_interleave(lo - torch.cumsum(counts, 0) + counts, counts)
    pos = torch.arange(int(counts.sum()), device=users.device) + start
    return row, cols[pos].long()


TOP_GROUP = 64
"""Scores per group whose maximum :func:`top_k` ranks first."""


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The columns of each row's ``k`` highest scores, best first (``torch.topk``'s answer).

    Every score among a row's ``k`` highest lies in one of the ``k`` groups of
    :data:`TOP_GROUP` columns with the highest maxima (each of those groups holds a score at
    least the ``k``-th highest maximum, so no score outside them can beat ``k`` of them), so
    one pass takes the groups' maxima and the exact selection runs over ``k`` groups instead
    of the whole row (4x faster at 87,585 movies).  Ties may fall either way, as in
    ``torch.topk``."""
    n, m = scores.shape
    whole = m // TOP_GROUP
    if whole <= 4 * k:
        return torch.topk(scores, min(k, m), dim=1).indices
    grouped = scores[:, :whole * TOP_GROUP].view(n, whole, TOP_GROUP)
    best = torch.topk(grouped.amax(2), k, dim=1).indices  # (n, k) groups
    cols = (best.unsqueeze(2) * TOP_GROUP + torch.arange(TOP_GROUP, device=scores.device))
    cols = torch.cat([cols.view(n, -1), torch.arange(whole * TOP_GROUP, m, device=scores.device)
                      .expand(n, -1)], 1)  # and the columns past the last whole group
    return cols.gather(1, torch.topk(scores.gather(1, cols), k, dim=1).indices)


def ranked_users(test_user: torch.Tensor, test_rating: torch.Tensor, n_users: int,
                 threshold: float = 4.0, max_users: int | None = None, seed: int = 0,
                 place=None) -> tuple[torch.Tensor, int]:
    """Users with a relevant test rating; a seeded sample of ``max_users`` of them when more;
    and how many are ranked in all.  ``place(count)``: where these users lie among a job's
    (:meth:`rec.als.exchange.Exchange.place`; each process holds the held-out ratings of a
    contiguous range of users), so that every process keeps its own users of the sample one
    process draws."""
    has = torch.zeros(n_users, dtype=torch.bool, device=test_user.device)
    has[test_user[test_rating >= threshold].long()] = True
    users = torch.nonzero(has).flatten()
    before, total = (0, users.numel()) if place is None else place(users.numel())
    if max_users is None or total <= max_users:
        return users, total
    pick = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:max_users]
    mine = pick[(pick >= before) & (pick < before + users.numel())] - before
    return torch.sort(users[mine.to(users.device)]).values, max_users


def pairs_of_users(ratings, index: torch.Tensor, users: torch.Tensor,
                   chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(user, item) of the rows in ``index`` whose user is in ``users``, in bounded memory."""
    wanted = torch.zeros(ratings.n_users, dtype=torch.bool)
    wanted[users.cpu()] = True
    parts = []
    for s in range(0, index.numel(), chunk):
        rows = index[s:s + chunk]
        u = ratings.user[rows]
        keep = wanted[u]
        parts.append((u[keep], ratings.item[rows][keep]))
    if not parts:
        return torch.empty(0, dtype=torch.int32), torch.empty(0, dtype=torch.int32)
    return torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])


def ranking(p: Params, train_user: torch.Tensor, train_item: torch.Tensor, test_user: torch.Tensor,
            test_item: torch.Tensor, test_rating: torch.Tensor, k: int = 10,
            threshold: float = 4.0, users: torch.Tensor | None = None,
            batch: int | None = None, popularity: torch.Tensor | None = None) -> dict[str, float]:
    """The ranking metrics at ``k`` over ``users`` (default: all with a relevant test rating).

    ``train_user``, ``train_item`` are the pairs excluded from the candidates
    (at least those of ``users``); ``popularity`` (n_items) each movie's training count.
    """
    if users is None:
        users = ranked_users(test_user, test_rating, p.user_factors.shape[0], threshold)[0]
    sums = ranking_sums(p, train_user, train_item, test_user, test_item, test_rating, k,
                        threshold, users, batch, popularity)
    return ranking_means(sums, users.numel(), k)


PER_USER = ("precision", "recall", "ndcg", "map", "hit_rate", "popularity")
"""The per-user sums at the head of :func:`ranking_sums`' vector."""


def ranking_means(sums: torch.Tensor, n: int, k: int) -> dict[str, float]:
    """:func:`ranking`'s metrics from :func:`ranking_sums` over ``n`` users (NaN for none)."""
    head = sums[:len(PER_USER)].tolist()
    out = {f"{name}@{k}": x / n if n else float("nan") for name, x in zip(PER_USER, head)}
    out[f"coverage@{k}"] = float((sums[len(PER_USER):] > 0).double().mean()) if n else float("nan")
    out["ranked_users"] = n
    return out


def ranking_sums(p: Params, train_user: torch.Tensor, train_item: torch.Tensor,
                 test_user: torch.Tensor, test_item: torch.Tensor, test_rating: torch.Tensor,
                 k: int, threshold: float, users: torch.Tensor,
                 batch: int | None = None, popularity: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Sums over ``users`` of each metric of :data:`PER_USER`, then how often each movie was
    recommended (float64, ``len(PER_USER) + n_items``): the sums of a job's ranks add up to
    one process's."""
    n_items = p.item_factors.shape[0]
    sums = torch.zeros(len(PER_USER) + n_items, dtype=torch.float64, device=users.device)
    scores = lambda b: torch.addmm(p.item_bias, p.user_factors[b], p.item_factors.T)  # no mu, b_m
    for rows, top in ranked_lists(scores, p.user_factors.shape[0], n_items, train_user,
                                  train_item, test_user, test_item, test_rating, k, threshold,
                                  users, batch, popularity):
        sums[:len(PER_USER)] += rows.sum(0)
        sums[len(PER_USER):].index_add_(0, top.reshape(-1), torch.ones(
            top.numel(), dtype=torch.float64, device=users.device))
    return sums


def ranked_lists(scores, n_users: int, n_items: int, train_user: torch.Tensor,
                 train_item: torch.Tensor, test_user: torch.Tensor, test_item: torch.Tensor,
                 test_rating: torch.Tensor, k: int, threshold: float, users: torch.Tensor,
                 batch: int | None = None, popularity: torch.Tensor | None = None):
    """Per batch of ``users``: each user's row of :data:`PER_USER` metrics (float64) and their
    top-``k`` movie indices, ranked by ``scores(batch) -> (len(batch), n_items)`` among the
    movies they did not interact with in training (any system's scores: the benchmarks rank
    peers with the same code)."""
    relevant = test_rating >= threshold
    rel_user, rel_item = test_user[relevant].long(), test_item[relevant].long()
    if users.numel() == 0:
        return
    pop = torch.zeros(n_items, dtype=torch.float64, device=users.device) if popularity is None \
        else popularity.to(users.device, torch.float64)
    batch = batch or max(16, (1 << 21) // max(n_items, 1))  # ~8 MB of scores: cached, 2-3x faster
    seen = _csr(train_user, train_item, n_users)  # as given: int32 halves its sort's memory
    rel = _csr(rel_user, rel_item, n_users)
    for s in range(0, users.numel(), batch):
        b = users[s:s + batch]
        scored = scores[b] if isinstance(scores, torch.Tensor) else scores(b)
        if scored._base is not None or not scored.is_contiguous():  # a view of the caller's
            scored = scored.clone()
        scored[_batch_pairs(*seen, b)] = float("-inf")
        top = top_k(scored, min(k, n_items))
        row, col = _batch_pairs(*rel, b)
        wanted = torch.arange(len(b), device=b.device).unsqueeze(1) * n_items + top
        hits = torch.isin(wanted, row * n_items + col).double()
        yield list_metrics(hits, (rel[0][b + 1] - rel[0][b]).double(), k, pop[top]), top


def list_metrics(hits: torch.Tensor, n_rel: torch.Tensor, k: int,
                 popularity: torch.Tensor) -> torch.Tensor:
    """:data:`PER_USER` of each list: ``hits`` (users, <= k) 1 where the movie at that rank
    is relevant, ``n_rel`` each user's relevant count, ``popularity`` the listed movies'."""
    n = hits.shape[1]
    ranks = torch.arange(1, n + 1, device=hits.device, dtype=torch.float64)
    discount = 1.0 / torch.log2(ranks + 1)
    best = n_rel.clamp(max=n)
    ideal = torch.cumsum(discount, 0)[(best - 1).long()]
    found = hits.sum(1)
    precision_at = torch.cumsum(hits, 1) / ranks
    return torch.stack([found / k, found / best, (hits * discount).sum(1) / ideal,
                        (precision_at * hits).sum(1) / best, (found > 0).double(),
                        popularity.double().mean(1)], 1)


def paired_bootstrap_rmse(errors_a: torch.Tensor, errors_b: torch.Tensor, n_boot: int = 2000,
                          seed: int = 0, level: float = 0.95, block: int = 200) -> dict[str, float]:
    """RMSE(a) - RMSE(b) on the same rows, with a paired bootstrap interval.

    ``errors_a[i]`` and ``errors_b[i]`` are two systems' errors on the same row ``i``; each
    bootstrap sample redraws the rows with replacement and recomputes both RMSEs on the
    same draw, so what the rows share (hard users, rare movies) cancels.  The interval is
    the percentile interval at ``level``; ``excludes_zero`` says whether the difference is
    real at that level.
    """
    a, b = errors_a.double().square(), errors_b.double().square()
    n = a.numel()
    if n == 0 or b.numel() != n:
        raise ValueError(f"need the same, non-zero number of rows, got {n} and {b.numel()}")
    g = torch.Generator().manual_seed(seed)
    diffs = []
    for s in range(0, n_boot, block):
        rows = torch.randint(0, n, (min(block, n_boot - s), n), generator=g)
        diffs.append(a[rows].mean(1).sqrt() - b[rows].mean(1).sqrt())
    diffs = torch.cat(diffs)
    lo, hi = torch.quantile(diffs, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    diff = float(a.mean().sqrt() - b.mean().sqrt())
    return {"diff": diff, "low": float(lo), "high": float(hi), "n": n,
            "excludes_zero": bool(lo > 0 or hi < 0)}


def rmse_interval(errors: torch.Tensor, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict[str, float]:
    """RMSE of ``errors`` with its bootstrap percentile interval (the paired interval against
    a system that makes no error)."""
    return paired_bootstrap_rmse(errors, torch.zeros_like(errors), n_boot, seed, level)
