"""EfficientAT MobileNets (Schmid et al.): being written."""
