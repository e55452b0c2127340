"""``sasrec`` and ``sasrec_sqn``: SASRec (Kang & McAuley, ICDM 2018), a causal Transformer over
each user's item sequence, optionally joined by the SQN Q head (Xin et al., SIGIR 2020).

sequences  chronological per-user sequences, training windows, each user's recent items
network    the Transformer, its supervised and Q heads (``SasrecParams`` rebuilds it)
sqn        rewards, Bellman targets, the target network, the Q loss
training   the compiled step, the epochs, the wall/CPU clock
export     the SavedModel with a second signature, ``recommend_history``
kind       the zoo's ``fit`` and ``export`` and what passes between them (train folder)
"""
