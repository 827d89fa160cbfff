"""Models: the paper's CNN, the MLP baseline, torchvision ResNets."""
