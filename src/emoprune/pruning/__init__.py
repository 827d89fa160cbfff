"""Gedeon's distinctiveness pruning of the CNN's hidden fully connected units.

``angles`` (neuron vectors, pairwise angles) -> ``distinctiveness`` (one check: merge similar
pairs, remove complementary ones) -> ``mask`` (keep removed neurons dead while training on) ->
``shrink`` (the smaller network); ``callbacks`` runs checks and angle traces inside ``fit``.
"""
