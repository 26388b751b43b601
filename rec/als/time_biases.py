"""Time-aware biases (Koren, "Collaborative Filtering with Temporal Dynamics", KDD 2009).

A rating of movie n by person m on day t is predicted as
``mu + b_m + alpha_m dev_m(t) + c_n + c_{n,bin(t)} + u_m . v_n`` (``model.time_drift``,
``model.time_bins``), with ``dev_m(t) = sign(t - t_m) |t - t_m|^0.4`` in days from the
person's mean training day ``t_m`` and priors ``c_{n,k} ~ N(0, 1/gamma_time)``,
``alpha_m ~ N(0, 1/gamma_drift)`` (times each row's rating count under
``reg_scaling=count``, like every other prior of J).

The bins cut the training ratings' days at their quantiles, so that each holds as many
ratings and every bin's biases are learned from as much data: rating activity varies over
the years (ml-latest-small's ten equal-width bins hold between 5% and 17% of its ratings,
and a dataset with a burst of activity would leave equal-width bins nearly empty).  A day
outside the training range falls in the first or last bin.

The rest of the engine sees the time terms as an offset of each training rating,
``o = c_{n,bin(t)} + alpha_m dev_m(t)``: every other step fits ``r - o`` exactly as it fits
``r`` without them (:meth:`TimedRatings.refresh` writes ``r - o`` into both sides' layouts),
so the user, movie, genre and SVD++ steps, their draws and the error sums are unchanged.
Given everything else, the biases per (movie, bin) are independent scalars with a closed-form
minimizer (and Gaussian conditional), and each person's bias and drift an independent pair:
two exact block steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from rec.als import kernel
from rec.als.groups import Groups, RowRatings, compact_index
from rec.als.params import Params, days, deviation
from rec.errors import ConfigError

CHUNK = 1 << 20
"""Ratings per chunk of the residual pass (bounds its (chunk, K) temporaries)."""


def time_axis(user: torch.Tensor, day: torch.Tensor, n_users: int,
              bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed axis of the time terms from the training ratings' days: ``bins - 1`` edges
    at the days' quantiles (ties may merge bins: fewer distinct edges), and each person's
    mean day (the overall mean for a person without training ratings)."""
    day = day.double()
    edges = torch.zeros(0, dtype=torch.float64)
    if bins > 1 and day.numel():  # numpy's quantile: torch's refuses past 2^24 values
        edges = torch.from_numpy(np.quantile(day.numpy(), np.arange(1, bins) / bins))
    count = torch.bincount(user, minlength=n_users).double()
    total = torch.zeros(n_users, dtype=torch.float64).index_add_(0, user, day)
    overall = float(day.mean()) if day.numel() else 0.0
    mean = torch.where(count > 0, total / count.clamp(min=1), overall)
    return edges, mean


@dataclass
class TimedRatings:
    """The training ratings, in one order, with what the time terms read of each; and where
    each sits in the two layouts, so that :meth:`refresh` can write ``r - o`` there."""

    user: torch.Tensor
    """(n,) person of each rating (int32 where every index fits: half the bytes to stream)."""
    item: torch.Tensor
    """(n,) movie of each rating."""
    rating: torch.Tensor
    """(n,) the rating values."""
    key: torch.Tensor | None
    """(n,) ``item * B + bin``: the (movie, bin) whose bias the rating gains."""
    dev: torch.Tensor | None
    """(n,) ``dev_m(t)`` of each rating."""
    slots: tuple
    """Per layout side (by user, by movie): the rating at each slot, in the layout's order
    (:func:`slots_of`); ``None`` for a fused layout whose slots hold the ratings in this
    order (the by-user layout of ratings ordered by person, as GroupLens files are)."""
    key_count: torch.Tensor | None
    """(movies * B,) training ratings per (movie, bin)."""
    dev_square: torch.Tensor | None
    """(users,) ``sum dev^2`` of each person's ratings."""
    dev_sum: torch.Tensor | None = None
    """(users,) ``sum dev`` of each person's ratings."""
    user_count: torch.Tensor | None = None
    """(users,) each person's training ratings."""

    @classmethod
    def build(cls, user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor,
              timestamp: torch.Tensor, n_users: int, n_items: int, bins: int, drift: bool,
              dtype: torch.dtype, device) -> tuple["TimedRatings", tuple]:
        """The timed training ratings and ``(bins, drift, bin_edges, user_day)``, the
        initial time terms' shapes and axis for :meth:`rec.als.params.Params.initial`."""
        day = days(timestamp)
        edges, user_day = time_axis(user, day, n_users, bins)
        n = day.numel()
        # in blocks: whole-array float64 temporaries of ML-32M's ratings take gigabytes
        key = torch.empty(n, dtype=compact_index(torch.tensor([n_items * max(bins, 1)])).dtype) \
            if bins else None
        dev = torch.empty(n, dtype=dtype) if drift else None
        sums = torch.zeros(3, n_users, dtype=torch.float64)  # ratings, sum dev, sum dev^2
        at_edges, at_day = edges.to(dtype).double(), user_day.to(dtype).double()
        for s in range(0, n, CHUNK):
            d, u = day[s:s + CHUNK].to(dtype).double(), user[s:s + CHUNK].long()
            if bins:
                key[s:s + CHUNK] = item[s:s + CHUNK].long() * bins + torch.bucketize(
                    d, at_edges, right=True)
            if drift:
                x = deviation(d, at_day[u])
                dev[s:s + CHUNK] = x
                for row, values in enumerate((torch.ones_like(x), x, x.square())):
                    sums[row].index_add_(0, u, values)
        to = lambda t: None if t is None else t.to(device)
        count = None if key is None else torch.bincount(key, minlength=n_items * bins).to(dtype)
        user_count, dev_sum, square = (to(x.to(dtype)) for x in sums) if drift else (None,) * 3
        timed = cls(to(compact_index(user)), to(compact_index(item)), to(rating.to(dtype)),
                    to(key), to(dev), (), to(count), square, dev_sum, user_count)
        return timed, (bins, drift, edges, user_day)

    def offsets(self, p: Params) -> torch.Tensor:
        """``o = c_{n,bin(t)} + alpha_m dev_m(t)`` of every training rating."""
        out = torch.zeros_like(self.rating)
        if self.key is not None:
            out += p.bin_bias.view(-1)[self.key]
        if self.dev is not None:
            out += p.drift[self.user] * self.dev
        return out

    def targets(self, p: Params, residual: bool = False, workspace=None,
                out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``r - o`` of every training rating (into ``out`` where given) and, with
        ``residual``, ``r - r-hat`` (time terms included): one compiled pass on a CPU where
        Numba is (``workspace``'s threads, :class:`rec.als.solve.Workspace`), else torch ops
        in chunks."""
        if self.compiled:
            target = torch.empty_like(self.rating) if out is None else out
            out = torch.empty_like(self.rating) if residual else self.rating.new_empty(0)
            kernel.run_blocks(kernel.time_targets, self.rating.numel(), *_threads(workspace),
                              *self._pass_args(p), _np(target), _np(out))
            return target, (out if residual else None)
        target = self.rating - self.offsets(p)
        if out is not None:
            target = out.copy_(target)
        if not residual:
            return target, None
        out = target.clone()
        static = p.without_time()
        for s in range(0, out.numel(), CHUNK):
            out[s:s + CHUNK] -= static.predict(self.user[s:s + CHUNK], self.item[s:s + CHUNK])
        return target, out

    def residuals(self, p: Params, workspace=None) -> torch.Tensor:
        """``r - r-hat`` of every training rating, time terms included."""
        return self.targets(p, True, workspace)[1]

    def refresh(self, p: Params, sides, workspace=None) -> None:
        """Write ``r - o`` into each layout of ``sides`` (by user, by movie; ``None``: freed),
        where the steps read a rating's value.  (Computing ``r - o`` once in training order
        and gathering it is faster than computing each slot's through its rating: the
        gather reads one array at random, not four.)"""
        for layout in sides:
            if isinstance(layout, RowRatings) and layout.levels.numel():
                # codes cannot hold r - o: the values themselves
                layout.vals = layout.values().to(self.rating.dtype)
                layout.levels = layout.levels.new_zeros(0)
        in_order = [layout is not None and slot is None for layout, slot in zip(sides, self.slots)]
        # a layout in training order takes r - o as it is computed (no gather)
        target = self.targets(p, workspace=workspace,
                              out=sides[in_order.index(True)].vals if any(in_order) else None)[0]
        for layout, slot, direct in zip(sides, self.slots, in_order):
            if layout is None or direct:
                continue
            if isinstance(layout, RowRatings):
                self._gather(target, slot, layout.vals, workspace)
                continue
            for chunk, at in zip(layout.chunks, slot):
                chunk.vals.copy_(torch.where(at >= 0, target[at.clamp(min=0)], 0))

    def _gather(self, source: torch.Tensor, index: torch.Tensor, out: torch.Tensor,
                workspace) -> None:
        """``out[:] = source[index]``: compiled where :attr:`compiled`, else torch's."""
        if not self.compiled:
            torch.index_select(source, 0, index, out=out)
            return
        kernel.run_blocks(kernel.gather, out.numel(), *_threads(workspace), _np(source),
                          _np(index), _np(out))

    def bin_sums(self, residual: torch.Tensor) -> torch.Tensor:
        """Each (movie, bin)'s ``sum e`` of the residuals ``residual``, in float64."""
        return torch.zeros(self.key_count.numel(), dtype=torch.float64,
                           device=residual.device).index_add_(0, self.key, residual.double())

    def bin_step(self, p: Params, sums: torch.Tensor, lam: float, gamma: float,
                 count_scaled: bool, omega: float = 1.0,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """Every ``c_{n,k}`` to its exact minimizer given the rest (over-relaxed by ``omega``),
        or with ``noise`` (standard normal, one per (movie, bin)) a draw from its Gaussian
        conditional: precision ``P = lam |G| + gamma w``, mean ``lam sum_G (e + c_{n,k}) / P``
        over its ratings G (``w = |G|`` under count scaling, else 1; ``sums``: each (movie,
        bin)'s ``sum e`` of the residuals ``e``).  Returns the changes, in float64."""
        flat = p.bin_bias.view(-1)
        old, count = flat.to(torch.float64, copy=True), self.key_count.double()
        precision = lam * count + gamma * (count if count_scaled else 1)
        # a (movie, bin) without ratings keeps its prior mean 0 (under count scaling its
        # precision is 0: J does not hold it)
        solved = torch.where(count > 0, lam * (sums.double() + count * old)
                             / precision.clamp(min=1e-30), 0)
        flat.copy_(old.lerp(solved, omega) if noise is None
                   else solved + noise.double() * precision.rsqrt())
        return flat.double() - old

    def errors_after_bins(self, total: float, sums: torch.Tensor, change: torch.Tensor) -> float:
        """``sum e^2`` after the bins' step, from the sums before it: each residual of (movie,
        bin) k falls by ``dc_k``, so ``sum e'^2 = sum e^2 - 2 sum_k dc_k E_k + sum_k |G_k|
        dc_k^2``."""
        return total - 2 * float((change * sums.double()).sum()) + float(
            (self.key_count.double() * change.square()).sum())

    def _pass_args(self, p: Params) -> tuple:
        """What the compiled passes over the ratings read, in their order (an empty array
        for a term that is off)."""
        empty_i, empty_f = self.user.new_empty(0), self.rating.new_empty(0)
        return (_np(self.user), _np(self.item), _np(empty_i if self.key is None else self.key),
                _np(empty_f if self.dev is None else self.dev), _np(self.rating),
                _np(p.bin_bias.reshape(-1)), _np(p.drift), float(p.mu), _np(p.user_bias),
                _np(p.item_bias), _np(p.user_factors), _np(p.item_factors))

    @property
    def compiled(self) -> bool:
        """Whether the compiled passes run (Numba, on a CPU)."""
        return kernel.AVAILABLE and self.rating.device.type == "cpu"

    def sums(self, p: Params, keys: bool, people: bool, workspace=None
             ) -> tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None, float]:
        """In one compiled pass that stores no residual (each thread adds into buffers of its
        own): with ``keys``, each (movie, bin)'s ``sum e`` (:meth:`bin_sums`); with ``people``,
        each person's ``sum e`` and ``sum dev e`` (:meth:`drift_sums`); and the total ``sum
        e^2``, of the residuals under ``p``, time terms included."""
        n = self.rating.numel()
        threads, pool = _threads(workspace, n)
        by_key = np.zeros((threads, self.key_count.numel() if keys else 0))
        by_person = np.zeros((threads, 2, p.user_bias.numel() if people else 0))
        args = self._pass_args(p)
        totals = kernel.run_shares(lambda s, first, last: kernel.time_sums(
            *args, by_key[s], by_person[s], first, last), n, threads, pool)
        person = torch.from_numpy(by_person.sum(0))
        return (torch.from_numpy(by_key.sum(0)) if keys else None,
                (person[0], person[1]) if people else None, float(sum(totals)))

    def shifted(self, person: tuple[torch.Tensor, torch.Tensor], change: torch.Tensor,
                workspace=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The person sums of :meth:`sums` after the bins moved by ``change`` (each residual
        falls by its (movie, bin)'s change), in one compiled pass that reads no factor."""
        n = self.rating.numel()
        threads, pool = _threads(workspace, n)
        shift = np.zeros((threads, 2, person[0].numel()))
        args = (_np(self.user), _np(self.key), _np(self.dev), change.double().numpy())
        kernel.run_shares(lambda s, first, last: kernel.shift_person_sums(
            *args, shift[s], first, last), n, threads, pool)
        total = torch.from_numpy(shift.sum(0))
        return person[0] + total[0], person[1] + total[1]

    def drift_sums(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each person's ``sum e`` and ``sum dev e`` of the residuals ``residual``."""
        zeros = lambda: torch.zeros(self.user_count.numel(), dtype=residual.dtype,
                                    device=residual.device)
        return (zeros().index_add_(0, self.user, residual).double(),
                zeros().index_add_(0, self.user, self.dev * residual).double())

    def drift_step(self, p: Params, sums: tuple[torch.Tensor, torch.Tensor], lam: float,
                   gamma_drift: float, gamma_bias: float, bias_mean: torch.Tensor | None,
                   weight: torch.Tensor | None, omega: float = 1.0,
                   noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every person's bias and drift ``(b_m, alpha_m)`` together to their exact minimizer
        given the rest, or with ``noise`` ((2, people) standard normal) a draw from their
        Gaussian conditional: precision ``P = lam [[n, S], [S, Q]] + diag(gamma_bias,
        gamma_drift) w_m`` (n ratings, ``S = sum dev``, ``Q = sum dev^2``), mean
        ``P^-1 (lam [sum e', sum dev e'] + [gamma_bias w_m b-bar_m, 0])`` with ``e' = e + b_m +
        alpha_m dev`` (``sums``: each person's ``sum e`` and ``sum dev e`` of the residuals
        ``e``; ``bias_mean``: b-bar, ``None``: 0; ``weight``: ``w_m``, ``None``: 1).  The pair
        moves together because ``dev`` has a nonzero mean per person (it is measured from the
        mean day), so one at a time they trade a shift back and forth over many epochs.
        Returns the changes of b and alpha."""
        w = 1 if weight is None else weight.double()
        b_old, a_old = (x.to(torch.float64, copy=True) for x in (p.user_bias, p.drift))
        count, dev_sum, square = (x.double() for x in (self.user_count, self.dev_sum,
                                                        self.dev_square))
        e, ed = sums
        r1 = lam * (e + count * b_old + dev_sum * a_old) + gamma_bias * w * (
            0 if bias_mean is None else bias_mean.double())
        r2 = lam * (ed + dev_sum * b_old + square * a_old)
        p11, p12, p22 = lam * count + gamma_bias * w, lam * dev_sum, lam * square + gamma_drift * w
        det = p11 * p22 - p12 * p12
        held = det > 0  # under count scaling a person without ratings keeps their prior
        det = torch.where(held, det, 1)
        b = torch.where(held, (p22 * r1 - p12 * r2) / det, b_old)
        a = torch.where(held, (p11 * r2 - p12 * r1) / det, a_old)
        if noise is None:
            b, a = b_old + omega * (b - b_old), a_old + omega * (a - a_old)
        else:  # mean + L^-T z, P = L L^T
            l11 = p11.clamp(min=1e-30).sqrt()
            l21 = p12 / l11
            l22 = (p22 - l21 * l21).clamp(min=1e-30).sqrt()
            x2 = noise[1].double() / l22
            b, a = b + (noise[0].double() - l21 * x2) / l11, a + x2
        p.user_bias.copy_(b)
        p.drift.copy_(a)
        return p.user_bias.double() - b_old, p.drift.double() - a_old

    def errors_after_drift(self, total: float, sums: tuple[torch.Tensor, torch.Tensor],
                           change: tuple[torch.Tensor, torch.Tensor]) -> float:
        """``sum e^2`` after the (b, alpha) step, from the sums before it: each residual
        falls by ``db_m + da_m dev``, so ``sum e'^2 = sum e^2 - 2 sum_m (db E_m + da ED_m) +
        sum_m (n db^2 + 2 S db da + Q da^2)`` (no second pass over the ratings)."""
        (e, ed), (db, da) = sums, change
        n, s, q = (x.double() for x in (self.user_count, self.dev_sum, self.dev_square))
        return total - 2 * float((db * e + da * ed).sum()) + float(
            (n * db * db + 2 * s * db * da + q * da * da).sum())

    def penalty(self, p: Params, gamma_time: float, gamma_drift: float,
                user_weight: torch.Tensor | None) -> float:
        """The time terms' part of J: ``gamma_time/2 sum w c_{n,k}^2 + gamma_drift/2 sum w
        alpha_m^2`` (``user_weight``: the people's count scaling; the bins' is their counts)."""
        j = 0.0
        if self.key is not None:
            w = 1 if user_weight is None else self.key_count.double()
            j += gamma_time / 2 * float((w * p.bin_bias.view(-1).double() ** 2).sum())
        if self.dev is not None:
            w = 1 if user_weight is None else user_weight.double()
            j += gamma_drift / 2 * float((w * p.drift.double() ** 2).sum())
        return j


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _threads(workspace, most: int | None = None) -> tuple:
    """The threads of a compiled pass (torch's count, at most ``most``) and the pool that
    runs them (``workspace``'s, :class:`rec.als.solve.Workspace`; ``None``: this thread)."""
    threads = max(1, min(torch.get_num_threads(), most or torch.get_num_threads()))
    return threads, None if workspace is None or threads == 1 else workspace.pool(threads)


def timed_ratings(spec, user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor,
                  timestamp: torch.Tensor | None, n_users: int, n_items: int,
                  subset: torch.Tensor | None) -> tuple[TimedRatings, tuple]:
    """:meth:`TimedRatings.build` over the ratings at ``subset`` (``None``: all), with their
    places in the layouts that ``spec`` (:class:`rec.als.layout.LayoutSpec`) makes of them:
    the ids ``1..n`` laid out as float64 values, in the same order as the ratings."""
    cfg = spec.cfg
    if timestamp is None or (timestamp.numel() and bool((timestamp == timestamp[0]).all())):
        raise ConfigError("model.time_bins and model.time_drift need the ratings' timestamps, "
                          "and these ratings have none (or one for all); drop the time terms.")
    take = (lambda t: t) if subset is None else (lambda t: t[subset])
    timed, axis = TimedRatings.build(take(user), take(item), take(rating), take(timestamp),
                                     n_users, n_items, cfg.time_bins, cfg.time_drift,
                                     spec.dtype, spec.device)
    ids = torch.zeros(user.numel(), dtype=torch.float64)
    ids[slice(None) if subset is None else subset] = torch.arange(
        1, timed.rating.numel() + 1, dtype=torch.float64)
    wide = replace(spec, dtype=torch.float64)
    timed.slots = tuple(None if _in_order(slot) else slot for slot in (
        slots_of(wide.group(user, item, ids, n_users, n_items, subset)),
        slots_of(wide.group(item, user, ids, n_items, n_users, subset))))
    return timed, axis


def _in_order(slot: torch.Tensor | list) -> bool:
    """Whether a fused layout's slots hold the training ratings in their own order."""
    return isinstance(slot, torch.Tensor) and torch.equal(
        slot, torch.arange(slot.numel(), dtype=slot.dtype, device=slot.device))


def slots_of(layout: Groups | RowRatings) -> torch.Tensor | list[torch.Tensor]:
    """Where each slot's rating sits in training order, from a layout of the ids ``1..n``
    laid out as values (0: padding): ``(nnz,)`` for the fused layout, one ``(rows, width)``
    tensor per chunk for the torch path (-1: padding)."""
    if isinstance(layout, RowRatings):
        return compact_index(layout.values().long() - 1)
    return [compact_index(chunk.vals.long() - 1) for chunk in layout.chunks]
