"""A blend of three collaborative models whose errors differ, served as one SavedModel.

    score_u = w_item * std(x_u B) + w_user * std((C^T X)_u) + w_vae * vae_u

    x_u B       item EASE (Steck 2019), ``blend_item_lambda``
    (C^T X)_u   EASE on the transposed matrix: users like u, ``blend_user_lambda``
    vae_u       the Mult-VAE ensemble's score (already standardised, ``multvae_*`` settings)
    std(.)      each user's row to mean 0, standard deviation 1, so weights compare

Why a blend: the three parts make different errors. Whether a blend (and which parts) beats
its single parts is decided on inner folds of the training part (bench/PROTOCOL.md), never on
the test split; bench/results/quality.md has the outcome and the history of this model
(it was first built after looking at test-split numbers; that round is recorded there).

Export stores B [N, N], the user-side score table [U, N] (C^T X depends only on training
data, so it is computed once at fit time) and the Mult-VAE weights; serving builds x_u from
the seen-item table like every score export.


Modules: ``training`` (the parts, the parts dropped for scale), ``export`` (numpy reference
and tf graph of the blended scores, the SavedModel), ``kind`` (the zoo's ``fit`` and
``export``).
"""
