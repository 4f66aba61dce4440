"""What a network is: activations (sympy expressions with their derivatives and closed-form hooks),
the :class:`~meanfield.spec.network.Network` with its normalization layers and its one text grammar,
and the symbols the theory is written in. Everything else reads this spec; it reads nothing else."""
