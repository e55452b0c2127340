"""NeuMF (He et al., WWW 2017): GMF and MLP branches fused, on implicit feedback (Keras 3).

    gmf  = p_u^G * q_i^G                          (element-wise)
    mlp  = MLP([p_u^M | q_i^M])                   (ReLU tower 2d -> d -> d/2)
    logit(u, i) = h^T [gmf | mlp] + b

Trained with binary cross-entropy on each distinct training pair against
``negatives_per_positive`` unseen items re-sampled every epoch (the paper's pointwise setup).

Export re-implements the forward pass with plain tf ops over the trained weights so that one
user is scored against the whole catalogue without repeating per-item work: the first MLP
layer splits into a user half and an item half ([B, 1, h] + [1, N, h]).


Modules: ``network`` (the Keras model), ``training``, ``export`` (numpy reference and tf
graph of the scores, the SavedModel), ``kind`` (the zoo's ``fit`` and ``export``).
"""
