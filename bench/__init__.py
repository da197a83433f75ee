"""Shareflow's benchmark suite: `make bench` (full) and `make bench-quick` (smaller sizes).

One module per figure (see FIGURES in bench/run.py); bench/common.py holds what they share.
"""
