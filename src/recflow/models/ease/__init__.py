"""``ease``: EASE, the closed-form item-item model (``closed_form``), its export and its
zoo entry (``kind``); the user-side twin is used by the blend."""
