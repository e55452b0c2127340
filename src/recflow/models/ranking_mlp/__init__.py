"""``ranking_mlp``: the deep ranking network (user and item towers, an MLP head).

network   the Keras model and its catalogue scoring (``score_matrix``)
training  positives plus sampled negatives each epoch, optionally under tf.distribute
dp        DP-SGD (per-example clipping, Gaussian noise) and its RDP accountant
export    the SavedModel in the serving contract (also the popularity baseline's)
kind      the zoo's ``fit`` and ``export``
"""
