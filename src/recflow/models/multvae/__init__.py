"""Mult-VAE (Liang et al., WWW 2018, "Variational Autoencoders for Collaborative Filtering").

Each user is their binary row x_u of distinct training items over the catalogue:

    h      = tanh(W_0 dropout(x_u / ||x_u||) + b_0)                encoder  N -> hidden
    mu, lv = W_1 h + b_1                                           -> 2 x latent
    z      = mu + exp(lv / 2) * eps   (training; mu when scoring)
    logits = W_3 tanh(W_2 z + b_2) + b_3                           decoder  latent -> hidden -> N
    loss   = -sum_i x_ui log softmax(logits)_i + beta * KL(q(z|x_u) || N(0, I))

beta rises linearly from 0 to ``multvae_beta_max`` over the first ``multvae_anneal_epochs``
epochs (the paper's KL annealing with a cap) and stays there. ``multvae_members`` networks
train side by side (an ensemble in one model: own initialisation, dropout and noise each).
Scores for serving are each member's decoder logits at z = mu, standardised per user and
averaged: softmax is monotone, so one member ranks by its multinomial probabilities. The
member count, KL cap and epochs are chosen on inner folds of the training part
(bench/PROTOCOL.md; the choice and its inner scores are in bench/results/quality.json).

Export re-implements the deterministic forward pass with tf ops over the trained weights and
builds x_u for a batch of users from the seen-item table the serving contract keeps anyway
(one scatter, as EASE does), through :func:`recflow.models.score_module.save_score_module`.


Modules: ``network`` (the Keras ensemble), ``training`` (KL annealing, the fit loop),
``export`` (numpy reference and tf graph of the scores, the SavedModel), ``kind`` (the zoo's
``fit`` and ``export``).
"""
