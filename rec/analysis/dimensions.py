"""``task=dimensions``: the same features model at several K, side by side (SPEC §4; report §4.6, §5.6).

For each K: test RMSE, the genre clustering's cophenetic correlation, mean
genre similarity, and the top-10 for the seed movie (the report's dummy user
and its centered form).
"""

from __future__ import annotations

import pandas as pd

from rec.analysis import genres, plots, recommend
from rec.analysis.context import Context


def run(ctx: Context, task) -> dict:
    rows, lists, structures = [], {}, {}
    for K in task.Ks:
        model = ctx.model("features", int(K))
        numbers, s = genres.describe(model, task.n_clusters)
        seed = model.find_movie(task.seed_movie)
        users, ratings = recommend.seed_raters(model, ctx, seed)
        top = recommend.top_lists(model, seed, users, ratings, task.min_count, task.top_n)
        lists[int(K)] = {k: top[k] for k in ("report", "centered")}
        structures[int(K)] = (model, s)
        rows.append({"K": int(K), "test_rmse": model.metrics.get("test/rmse"),
                     "val_rmse": model.metrics.get("val/rmse"),
                     "cold_start_rmse": model.metrics.get("test/cold_rmse"),
                     "cophenetic": numbers["cophenetic"], "mean_genre_similarity": numbers["mean_similarity"],
                     "intra_cluster": numbers["intra_cluster"], "inter_cluster": numbers["inter_cluster"]})
    table = pd.DataFrame(rows)
    table.to_csv(ctx.out_dir / "dimensions.csv", index=False)
    tops = pd.DataFrame({f"K={K} {k}": [r["title"] for r in v] for K, d in lists.items() for k, v in d.items()},
                        index=pd.RangeIndex(1, task.top_n + 1, name="rank"))
    tops.to_csv(ctx.out_dir / "dimensions_top10.csv")

    fig, axes = plots.figure(len(structures), width=6.5, height=5.8)
    for ax, (K, (model, _)) in zip(axes[0], structures.items()):
        genres.map_panel(ax, genres.genre_factors(model), model.movies.genre_names,
                         f"Genre embeddings, K = {K}")
    plots.save(fig, ctx.out_dir / "genre_maps.png")
    for K, (model, s) in structures.items():
        genres.clustermap(ctx.out_dir / f"genre_similarity_K{K}.png", s, model.movies.genre_names,
                          f"Cosine similarity of genre embeddings, K = {K}")

    result = {"table": rows, "top": lists, "seed_movie": task.seed_movie, "min_count": int(task.min_count)}
    with pd.option_context("display.width", 250):
        shown = table.to_string(index=False, float_format=lambda x: f"{x:.3f}")
        top_shown = tops.map(lambda t: plots.short(t, 30)).to_string()
    result["summary"] = f"{shown}\n(report: cophenetic 0.61 at K=2, 0.82 at K=10)\n{top_shown}"
    return result
