"""Tuned KD's (T, alpha) search: the grid trained as stacked students, and successive halving over stacked rungs
(the study's default), resumable from its last rung."""
