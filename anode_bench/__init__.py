"""anode-bench: benchmarks of gradient methods for neural ODE image classifiers."""
