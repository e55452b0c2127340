"""``popularity``: the most popular unseen items, the baseline every candidate must beat."""
