"""PANNs (Kong et al. 2020): being written."""
