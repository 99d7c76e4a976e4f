"""Recipes: a mixture of sources with counts, weights and an eval split, read from one YAML file.

``spec`` parses and checks the file (one line per mistake, before any work); ``draw`` decides, from
each record's content and the seed, which records go to train (how many times) and which to eval.
Building the sides is ``run.mixture``'s: this package reads no data."""
