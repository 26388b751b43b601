"""Bayesian matrix factorization by Gibbs sampling on the ALS engine (``inference=gibbs``)."""
