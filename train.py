"""Train a model of the ladder: ``python train.py model=features K=10`` (see README.md).

Any key is a Hydra override (``data=ml-32m``, ``model.tau=0.5``, ``device=cuda``);
``-m K=8,10,12 model.tau=0.1,0.25,1`` runs a grid and ranks it by validation RMSE (minus
validation NDCG@k for ``feedback=implicit``), which this returns for a sweeper to minimize.
The same as ``rec train`` once installed (:mod:`rec.command`).
"""

from rec.command import train

if __name__ == "__main__":
    train()
