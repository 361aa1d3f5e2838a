"""tuner: search prune ratio x precision x fusion x batch x placement for the fastest accurate-enough build."""
